/*
 * conn.c: the client's connection to mistrald: blocking Unix-socket I/O
 * around poll(), one request at a time, notifications handed to a
 * callback, and SIGINT turned into a "cancel" request.
 *
 * DESIGN
 *  1. Incoming bytes accumulate in one buffer; proto_scan() finds each
 *     message (with the client limits of protocol.h) before msgpack-c
 *     decodes it, exactly as the daemon does, so a broken daemon cannot
 *     make the client allocate without bound either.
 *  2. A decoded message's strings point into that buffer, so its bytes
 *     are only dropped at the start of the next conn_next() call: a
 *     result stays valid until the caller's next call.
 *  3. SIGINT is caught by a handler that only writes a byte into a pipe
 *     (the self-pipe trick); poll() watches the pipe next to the socket,
 *     so an interrupt is never lost between a check and a wait.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

#define CONN_READ_CHUNK	(64U << 10)

struct conn {
	int			 fd;
	bool			 dead;
	uint32_t		 next_id;
	uint32_t		 req_id;	/* the request being built */
	msgpack_sbuffer		 out;
	msgpack_packer		 pk;
	uint8_t			*in;		/* received, not yet consumed */
	size_t			 in_len;
	size_t			 in_cap;
	size_t			 in_used;	/* the current message */
	msgpack_unpacked	 u;
	struct proto_limits	 lim;
};

static int			conn_sigpipe[2] = { -1, -1 };
static volatile sig_atomic_t	conn_sigint;

static void
conn_sigint_cb(int sig)
{
	int	saved = errno;

	(void)sig;
	conn_sigint = 1;
	if (conn_sigpipe[1] != -1)
		(void)write(conn_sigpipe[1], "i", 1);
	errno = saved;
}

void
conn_signals(void)
{
	struct sigaction	sa;

	if (pipe2(conn_sigpipe, O_NONBLOCK | O_CLOEXEC) != 0)
		conn_sigpipe[0] = conn_sigpipe[1] = -1;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = conn_sigint_cb;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;	/* no SA_RESTART: blocking reads see EINTR */
	sigaction(SIGINT, &sa, NULL);
}

bool
conn_interrupted(void)
{
	return conn_sigint != 0;
}

void
conn_clear_interrupt(void)
{
	char	buf[64];

	if (conn_sigpipe[0] != -1) {
		while (read(conn_sigpipe[0], buf, sizeof buf) > 0)
			;
	}
	conn_sigint = 0;
}

int
conn_open(const char *path, struct conn **out, char *cause, size_t cap)
{
	struct sockaddr_un	 sun;
	struct conn		*c;
	int			 fd;
	const struct proto_limits lim = PROTO_LIMITS_CLIENT;

	*out = NULL;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path) {
		snprintf(cause, cap, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(cause, cap, "socket: %s", strerror(errno));
		return -errno;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		int	e = errno;

		snprintf(cause, cap, "cannot connect to %s: %s", path,
		    strerror(e));
		close(fd);
		return -e;
	}
	if ((c = calloc(1, sizeof *c)) == NULL) {
		snprintf(cause, cap, "out of memory");
		close(fd);
		return -ENOMEM;
	}
	c->fd = fd;
	c->next_id = 1;
	c->lim = lim;
	msgpack_sbuffer_init(&c->out);
	msgpack_packer_init(&c->pk, &c->out, msgpack_sbuffer_write);
	msgpack_unpacked_init(&c->u);
	*out = c;
	return 0;
}

void
conn_close(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->fd != -1)
		close(c->fd);
	msgpack_sbuffer_destroy(&c->out);
	msgpack_unpacked_destroy(&c->u);
	free(c->in);
	free(c);
}

bool
conn_alive(const struct conn *c)
{
	return c != NULL && !c->dead;
}

msgpack_packer *
conn_request(struct conn *c, const char *method, uint32_t nargs)
{
	msgpack_sbuffer_clear(&c->out);
	c->req_id = c->next_id++;
	proto_pack_request(&c->pk, c->req_id, method, nargs);
	return &c->pk;
}

static int
conn_write(struct conn *c, const char *data, size_t len)
{
	ssize_t	n;

	while (len > 0) {
		n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			c->dead = true;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The next whole message, decoded and parsed into *m.  Returns 0, -EINTR
 * (SIGINT while waiting), or another negative errno with err filled.
 */
static int
conn_next(struct conn *c, struct proto_msg *m, char *err, size_t cap)
{
	struct pollfd	 pfd[2];
	size_t		 ml, want;
	ssize_t		 n;
	uint8_t		*p;
	int		 r;

	if (c->in_used > 0) {
		memmove(c->in, c->in + c->in_used, c->in_len - c->in_used);
		c->in_len -= c->in_used;
		c->in_used = 0;
	}
	for (;;) {
		switch (proto_scan(c->in, c->in_len, &c->lim, &ml)) {
		case PROTO_SCAN_OK:
			if (proto_decode(c->in, ml, &c->u) != 0 ||
			    proto_parse(&c->u.data, m) != 0) {
				snprintf(err, cap, "malformed message from "
				    "mistrald");
				c->dead = true;
				return -EPROTO;
			}
			c->in_used = ml;
			return 0;
		case PROTO_SCAN_MORE:
			break;
		default:
			snprintf(err, cap, "oversized or malformed message "
			    "from mistrald");
			c->dead = true;
			return -EPROTO;
		}

		want = c->in_len + CONN_READ_CHUNK;
		if (want < ml)
			want = ml;
		if (want > c->in_cap) {
			/* Grow geometrically: a big reply is not copied over
			 * and over. */
			if (want < 2 * c->in_cap)
				want = 2 * c->in_cap;
			if ((p = realloc(c->in, want)) == NULL) {
				snprintf(err, cap, "out of memory");
				return -ENOMEM;
			}
			c->in = p;
			c->in_cap = want;
		}

		pfd[0].fd = c->fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = conn_sigpipe[0];
		pfd[1].events = POLLIN;
		r = poll(pfd, conn_sigpipe[0] == -1 ? 1 : 2, -1);
		if (conn_sigint)
			return -EINTR;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, cap, "poll: %s", strerror(errno));
			return -errno;
		}
		if (pfd[0].revents == 0)
			continue;
		n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, cap, "connection to mistrald lost%s%s",
			    n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
			c->dead = true;
			return n < 0 ? -errno : -ECONNRESET;
		}
		c->in_len += (size_t)n;
	}
}

/* Send a "cancel" for request id (its response is ignored later). */
static int
conn_cancel(struct conn *c, uint32_t id)
{
	msgpack_sbuffer	sb;
	msgpack_packer	pk;
	int		r;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_request(&pk, c->next_id++, "cancel", 1);
	proto_pack_kv_uint(&pk, "request", id);
	r = conn_write(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return r;
}

int
conn_call(struct conn *c, struct call *call, conn_notify_cb *cb, void *arg)
{
	struct proto_msg	 m;
	const msgpack_object	*o;
	bool			 cancelled = false;
	int64_t			 v;
	int			 r;

	memset(call, 0, sizeof *call);
	call->msgid = c->req_id;
	if (c->dead || conn_write(c, c->out.data, c->out.size) != 0) {
		snprintf(call->message, sizeof call->message,
		    "connection to mistrald lost");
		return CLIENT_EXIT_UNREACHABLE;
	}
	for (;;) {
		r = conn_next(c, &m, call->message, sizeof call->message);
		if (r == -EINTR) {
			conn_clear_interrupt();
			if (cb == NULL || cancelled) {
				snprintf(call->message, sizeof call->message,
				    "interrupted");
				return CLIENT_EXIT_INTERRUPTED;
			}
			cancelled = true;
			if (conn_cancel(c, call->msgid) != 0) {
				snprintf(call->message, sizeof call->message,
				    "connection to mistrald lost");
				return CLIENT_EXIT_UNREACHABLE;
			}
			continue;
		}
		if (r < 0)
			return CLIENT_EXIT_UNREACHABLE;
		if (m.type == PROTO_NOTIFICATION) {
			if (cb != NULL &&
			    proto_arg_int(m.args, "request", &v) == 0 &&
			    v == call->msgid)
				cb(&m, arg);
			continue;
		}
		if (m.type != PROTO_RESPONSE || m.msgid != call->msgid)
			continue;
		if (m.error == NULL) {
			call->result = m.result;
			return CLIENT_EXIT_OK;
		}
		o = m.error;
		call->code = (int)obj_int(o, "code", PROTO_E_INTERNAL);
		obj_str(o, "message", call->message, sizeof call->message);
		if (call->message[0] == '\0')
			snprintf(call->message, sizeof call->message, "%s",
			    proto_error_message(call->code));
		return CLIENT_EXIT_DAEMON;
	}
}
