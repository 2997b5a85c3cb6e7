/*
 * server.c: the Unix socket, its connections, framing and output.
 *
 * All of this runs on the loop thread.  Incoming bytes collect in a
 * per-connection buffer that never grows past the message limit; each
 * message is bounds-checked by proto_scan() before msgpack-c unpacks it
 * (msgpack-c has no limits of its own: PLATFORM.md 1a).  A message that is
 * too large or malformed is answered with an error when its msgid can be
 * read, and the connection is then closed; other clients never notice.
 *
 * DESIGN
 * 1. A struct client is freed only in its uv_close callback.  Closing sets
 *    c->closing first; every dispatch checks it, and turns running for the
 *    client are told (turn_client_gone) so they stop and forget it.
 * 2. Closing after an error reply goes through uv_shutdown, so the reply
 *    is written before the close (uv_close would cancel pending writes).
 * 3. Backpressure: uv_write queues without limit, so after every send the
 *    output not yet written (c->queued: the bytes plus each write's
 *    bookkeeping, so that a stream of tiny token notifications is counted
 *    at what it really costs) is checked against write-buffer, and each
 *    message's buffer is trimmed to its length before it is queued
 *    (msgpack's sbuffer allocates 8 KiB at least).  Over it, the client's
 *    turns are paused (the engine skips them) and its input is neither
 *    read nor handled (a client pipelining requests without reading the
 *    replies would otherwise grow the queue without bound), until the
 *    queue drains to half; a client that stays over for SERVER_STALL_MS
 *    is dropped.
 * 4. The socket: the path length is checked (libuv silently truncates past
 *    sun_path), the parent directory is created 0755, a leftover socket is
 *    probed with connect(): refused means stale (removed), accepted means
 *    another daemon is live (we refuse to start).  It is created 0660
 *    under a umask and chmod()ed again (uv_pipe_chmod can only make 0777),
 *    and given socket-group when configured.
 * 5. Input memory: a connection's buffer is freed whenever it holds no
 *    unread bytes, so idle connections cost none.  Growing one past
 *    SERVER_READ_CHUNK (for a large message) draws on one budget shared by
 *    all connections (server_input_budget); a connection that would
 *    overdraw it is refused (UNAVAILABLE) rather than let many clients
 *    that each send most of a maximum-size message hold max-connections
 *    times max-message bytes.  A connection that sent part of a message
 *    and then nothing for SERVER_STALL_MS is dropped.
 * 6. max-connections: one connection over the limit is still accepted,
 *    so that its first request can be answered with a clear
 *    LIMIT_EXCEEDED error, then closed; it is closed anyway after
 *    SERVER_REFUSED_MS.  Past SERVER_REFUSED_MAX such connections, more
 *    are closed at once.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"

#define SERVER_STALL_MS		30000	/* a client over the mark this long
					   is dropped */
#define SERVER_READ_CHUNK	65536
#define SERVER_REFUSED_MS	5000	/* a refused connection's grace */
#define SERVER_REFUSED_MAX	64	/* refused connections kept open */

struct server_write {
	uv_write_t	 req;
	char		*data;
	size_t		 len;
};
/* What a queued write costs besides its bytes (malloc headers too). */
#define SERVER_WRITE_COST	(sizeof(struct server_write) + 32)

static uv_pipe_t	 server_pipe;
static int		 server_open;
static int		 server_activated;	/* fd from systemd */
static uv_timer_t	 server_timer;
static TAILQ_HEAD(, client) server_clients =
    TAILQ_HEAD_INITIALIZER(server_clients);
static int		 server_nclients;	/* including refused ones */
static int		 server_nrefused;
static size_t		 server_input_big;	/* bytes of input buffers past
						   SERVER_READ_CHUNK */
static int		 server_trim;		/* big buffers were freed */
static uint64_t		 server_next_id = 1;

static void	server_client_close_cb(uv_handle_t *);
static void	server_write_cb(uv_write_t *, int);
static void	server_process(struct client *);

int
server_n_clients(void)
{
	return server_nclients - server_nrefused;
}

/* The shared budget for large input buffers (DESIGN 5). */
static size_t
server_input_budget(void)
{
	size_t one = cfg.max_message + SERVER_READ_CHUNK;

	return one * 4 > (64u << 20) ? one * 4 : 64u << 20;
}

/* Free or set c's input buffer, keeping server_input_big right. */
static void
server_rbuf_set(struct client *c, uint8_t *buf, size_t cap)
{
	if (c->rcap > SERVER_READ_CHUNK) {
		server_input_big -= c->rcap - SERVER_READ_CHUNK;
		server_trim = 1;
	}
	if (cap > SERVER_READ_CHUNK)
		server_input_big += cap - SERVER_READ_CHUNK;
	c->rbuf = buf;
	c->rcap = cap;
}

/* Is uid (primary group gid) root or in admin-group? */
static int
server_uid_is_admin(uid_t uid, gid_t gid)
{
	struct group *gr;
	struct passwd *pw;
	gid_t groups[256];
	int ng = 256;

	if (uid == 0)
		return 1;
	if (cfg.admin_group == NULL || *cfg.admin_group == '\0')
		return 0;
	if ((gr = getgrnam(cfg.admin_group)) == NULL)
		return 0;
	if (gid == gr->gr_gid)
		return 1;
	if ((pw = getpwuid(uid)) == NULL)
		return 0;
	if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) == -1)
		return 0;
	for (int i = 0; i < ng; i++) {
		if (groups[i] == gr->gr_gid)
			return 1;
	}
	return 0;
}

int
server_client_is_admin(const struct client *c)
{
	return server_uid_is_admin(c->uid, c->gid);
}

/* Queue a message for c, taking sb's buffer.  Drops it if c is closing. */
void
server_send(struct client *c, msgpack_sbuffer *sb)
{
	struct server_write *w;
	uv_buf_t buf;
	size_t q;

	if (c == NULL || c->closing) {
		msgpack_sbuffer_destroy(sb);
		return;
	}
	w = xmalloc(sizeof *w);
	w->len = sb->size;
	q = sb->alloc;
	w->data = msgpack_sbuffer_release(sb);
	if (q > w->len + 64 && w->len > 0)
		w->data = xrealloc(w->data, w->len);
	w->req.data = w;
	buf = uv_buf_init(w->data, (unsigned)w->len);
	if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1,
	    server_write_cb) != 0) {
		free(w->data);
		free(w);
		server_client_close(c);
		return;
	}
	c->queued += w->len + SERVER_WRITE_COST;
	q = c->queued;
	if (!c->over && q > cfg.write_buffer) {
		c->over = 1;
		c->over_since = uv_now(loop);
		log_debug("client %llu: %zu bytes unread, pausing its turns",
		    (unsigned long long)c->id, q);
		turn_pause(c, 1);
	}
}

static void
server_write_cb(uv_write_t *req, int status)
{
	struct server_write *w = req->data;
	struct client *c = (struct client *)req->handle;

	c->queued -= w->len + SERVER_WRITE_COST;
	free(w->data);
	free(w);
	if (status != 0) {
		if (status != UV_ECANCELED)
			log_debug("client %llu: write: %s",
			    (unsigned long long)c->id, uv_strerror(status));
		server_client_close(c);
		return;
	}
	if (c->over && c->queued <= cfg.write_buffer / 2) {
		c->over = 0;
		turn_pause(c, 0);
		server_process(c);
	}
}

static void
server_shutdown_cb(uv_shutdown_t *req, int status)
{
	uv_handle_t *h = (uv_handle_t *)req->handle;

	free(req);
	if (!uv_is_closing(h))
		uv_close(h, server_client_close_cb);
}

/*
 * Close a client: stop reading, tell its turns, let queued output go out
 * (uv_shutdown), then close.  Safe to call more than once.
 */
void
server_client_close(struct client *c)
{
	uv_shutdown_t *req;

	if (c->closing)
		return;
	c->closing = 1;
	c->closing_since = uv_now(loop);
	uv_read_stop((uv_stream_t *)&c->pipe);
	turn_client_gone(c);
	req = xmalloc(sizeof *req);
	if (uv_shutdown(req, (uv_stream_t *)&c->pipe, server_shutdown_cb) != 0) {
		free(req);
		uv_close((uv_handle_t *)&c->pipe, server_client_close_cb);
	}
}

static void
server_client_close_cb(uv_handle_t *h)
{
	struct client *c = (struct client *)h;

	TAILQ_REMOVE(&server_clients, c, entry);
	server_nclients--;
	if (c->refused)
		server_nrefused--;
	log_debug("client %llu: closed", (unsigned long long)c->id);
	free(c->rbuf);
	server_rbuf_set(c, NULL, 0);
	free(c);
	daemon_shutdown_check();
}

/*
 * Hand libuv room for the next read.  A zero-length buffer makes libuv
 * report UV_ENOBUFS to server_read_cb: the shared budget is spent.
 */
static void
server_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct client *c = (struct client *)h;
	size_t max = cfg.max_message + SERVER_READ_CHUNK, cap, more;

	if (c->rcap - c->rlen < SERVER_READ_CHUNK && c->rcap < max) {
		cap = c->rcap ? c->rcap * 2 : SERVER_READ_CHUNK;
		if (cap < c->rlen + SERVER_READ_CHUNK)
			cap = c->rlen + SERVER_READ_CHUNK;
		if (cap > max)
			cap = max;
		more = cap - (c->rcap > SERVER_READ_CHUNK ? c->rcap :
		    SERVER_READ_CHUNK);
		if (cap > SERVER_READ_CHUNK &&
		    server_input_big + more > server_input_budget()) {
			*buf = uv_buf_init(NULL, 0);
			return;
		}
		server_rbuf_set(c, xrealloc(c->rbuf, cap), cap);
	}
	*buf = uv_buf_init((char *)c->rbuf + c->rlen,
	    (unsigned)(c->rcap - c->rlen));
}

/* Refuse a message: error reply if the msgid can be read, then close. */
static void
server_refuse(struct client *c, int code, const char *why)
{
	uint32_t msgid;

	log_info("client %llu (uid %u): %s; closing",
	    (unsigned long long)c->id, (unsigned)c->uid, why);
	if (proto_peek_msgid(c->rbuf, c->rlen, &msgid) == 0)
		reply_error(c, msgid, code, "%s", why);
	server_client_close(c);
}

/* Handle one whole message of len bytes at the start of c->rbuf. */
static void
server_message(struct client *c, size_t len)
{
	msgpack_unpacked u;
	struct proto_msg m;
	int rc;

	msgpack_unpacked_init(&u);
	if (proto_decode(c->rbuf, len, &u) != 0) {
		msgpack_unpacked_destroy(&u);
		server_refuse(c, PROTO_E_PARSE, "malformed message");
		return;
	}
	memset(&m, 0, sizeof m);
	rc = proto_parse(&u.data, &m);
	if (c->refused) {
		if (rc == 0 && m.type == PROTO_REQUEST)
			reply_error(c, m.msgid, PROTO_E_LIMIT_EXCEEDED,
			    "too many connections: %u are open "
			    "(max-connections); try again later",
			    cfg.max_connections);
		msgpack_unpacked_destroy(&u);
		server_client_close(c);
		return;
	}
	if (rc != 0) {
		if (m.type == PROTO_REQUEST || m.msgid != 0)
			reply_error(c, m.msgid, rc, NULL);
		msgpack_unpacked_destroy(&u);
		server_client_close(c);
		return;
	}
	if (m.type == PROTO_REQUEST)
		method_dispatch(c, &m);
	else
		log_debug("client %llu: ignoring a message of type %d",
		    (unsigned long long)c->id, m.type);
	msgpack_unpacked_destroy(&u);
}

static void	server_read_cb(uv_stream_t *, ssize_t, const uv_buf_t *);

/*
 * Handle the whole messages in c's input, unless its output is over the
 * mark (DESIGN 3); then read more, or stop reading until it drains.
 */
static void
server_process(struct client *c)
{
	struct proto_limits lim = PROTO_LIMITS_DEFAULT;
	size_t len;

	lim.max_message = cfg.max_message;
	while (!c->closing && !c->over && c->rlen > 0 && c->rlen >= c->need) {
		switch (proto_scan(c->rbuf, c->rlen, &lim, &len)) {
		case PROTO_SCAN_OK:
			server_message(c, len);
			if (c->closing)
				return;
			memmove(c->rbuf, c->rbuf + len, c->rlen - len);
			c->rlen -= len;
			c->need = 0;
			break;
		case PROTO_SCAN_MORE:
			c->need = len;
			if (c->rlen >= cfg.max_message + SERVER_READ_CHUNK) {
				server_refuse(c, PROTO_E_TOO_LARGE,
				    "message too large");
				return;
			}
			goto out;
		case PROTO_SCAN_TOO_BIG:
			if (len > cfg.max_message) {
				char why[128];

				snprintf(why, sizeof why, "a message of %zu "
				    "bytes is over max-message (%llu bytes)",
				    len, (unsigned long long)cfg.max_message);
				server_refuse(c, PROTO_E_TOO_LARGE, why);
			} else
				server_refuse(c, PROTO_E_TOO_LARGE, "a string, "
				    "array or map in the message is over the "
				    "protocol's limits");
			return;
		case PROTO_SCAN_BAD:
			server_refuse(c, PROTO_E_PARSE,
			    "malformed or too deeply nested message");
			return;
		}
	}
out:
	if (c->closing)
		return;
	if (c->rlen == 0 && c->rbuf != NULL) {
		free(c->rbuf);
		server_rbuf_set(c, NULL, 0);
	}
	if (c->over && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = 0;
	} else if (!c->over && !c->reading) {
		uv_read_start((uv_stream_t *)&c->pipe, server_alloc_cb,
		    server_read_cb);
		c->reading = 1;
	}
}

static void
server_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct client *c = (struct client *)s;

	if (c->closing)
		return;
	if (nread == UV_ENOBUFS) {
		server_refuse(c, PROTO_E_UNAVAILABLE, "the daemon is holding "
		    "too much unfinished input from other connections; try "
		    "again later");
		return;
	}
	if (nread < 0) {
		if (nread != UV_EOF)
			log_debug("client %llu: read: %s",
			    (unsigned long long)c->id,
			    uv_strerror((int)nread));
		server_client_close(c);
		return;
	}
	if (nread > 0)
		c->last_read = uv_now(loop);
	c->rlen += (size_t)nread;
	server_process(c);
}

static void
server_connection_cb(uv_stream_t *srv, int status)
{
	struct client *c;
	struct ucred cr;
	socklen_t len = sizeof cr;
	uv_os_fd_t fd;

	if (status != 0) {
		log_warnx("server_connection_cb: %s", uv_strerror(status));
		return;
	}
	c = xcalloc(1, sizeof *c);
	TAILQ_INIT(&c->turns);
	uv_pipe_init(loop, &c->pipe, 0);
	c->id = server_next_id++;
	TAILQ_INSERT_TAIL(&server_clients, c, entry);
	server_nclients++;
	if (uv_accept(srv, (uv_stream_t *)&c->pipe) != 0) {
		c->closing = 1;
		uv_close((uv_handle_t *)&c->pipe, server_client_close_cb);
		return;
	}
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
		log_warn("server_connection_cb: SO_PEERCRED");
		c->closing = 1;
		uv_close((uv_handle_t *)&c->pipe, server_client_close_cb);
		return;
	}
	c->uid = cr.uid;
	c->gid = cr.gid;
	c->pid = cr.pid;
	c->since = c->last_read = uv_now(loop);
	if (shutting_down || ((uint32_t)server_n_clients() >
	    cfg.max_connections && server_nrefused >= SERVER_REFUSED_MAX)) {
		log_warnx("client from uid %u refused: %s", (unsigned)c->uid,
		    shutting_down ? "shutting down" : "too many connections");
		c->closing = 1;
		uv_close((uv_handle_t *)&c->pipe, server_client_close_cb);
		return;
	}
	if ((uint32_t)server_n_clients() > cfg.max_connections) {
		log_warnx("client from uid %u refused: too many connections "
		    "(max-connections %u)", (unsigned)c->uid,
		    cfg.max_connections);
		c->refused = 1;
		server_nrefused++;
	} else
		log_debug("client %llu: uid %u gid %u pid %d",
		    (unsigned long long)c->id, (unsigned)c->uid,
		    (unsigned)c->gid, (int)c->pid);
	uv_read_start((uv_stream_t *)&c->pipe, server_alloc_cb, server_read_cb);
	c->reading = 1;
}

/* Once a second: drop clients that stalled, give memory back. */
static void
server_timer_cb(uv_timer_t *t)
{
	struct client *c, *tmp;
	uint64_t now = uv_now(loop);

	/* glibc keeps freed memory in its heap (its mmap threshold rises
	 * with every large block freed), so give back what large input
	 * buffers held. */
	if (server_trim) {
		server_trim = 0;
		malloc_trim(0);
	}
	TAILQ_FOREACH_SAFE(c, &server_clients, entry, tmp) {
		/* A shutdown waits for queued output, which a client that
		 * never reads would make wait for ever. */
		if (c->closing && !uv_is_closing((uv_handle_t *)&c->pipe) &&
		    now - c->closing_since > SERVER_STALL_MS) {
			uv_close((uv_handle_t *)&c->pipe,
			    server_client_close_cb);
			continue;
		}
		if (c->refused && !c->closing &&
		    now - c->since > SERVER_REFUSED_MS) {
			server_client_close(c);
			continue;
		}
		if (!c->closing && c->reading && c->rlen > 0 &&
		    now - c->last_read > SERVER_STALL_MS) {
			log_info("client %llu (uid %u) sent %zu bytes of a "
			    "message and nothing more for %d s; dropping it",
			    (unsigned long long)c->id, (unsigned)c->uid,
			    c->rlen, SERVER_STALL_MS / 1000);
			server_client_close(c);
			continue;
		}
		if (c->over && !c->closing &&
		    now - c->over_since > SERVER_STALL_MS) {
			log_info("client %llu (uid %u) has not read for %d s; "
			    "dropping it", (unsigned long long)c->id,
			    (unsigned)c->uid, SERVER_STALL_MS / 1000);
			c->closing = 1;
			uv_read_stop((uv_stream_t *)&c->pipe);
			turn_client_gone(c);
			uv_close((uv_handle_t *)&c->pipe,
			    server_client_close_cb);
		}
	}
}

/* mkdir -p with mode for the missing parents of path. */
static int
server_mkdirs(const char *path, mode_t mode)
{
	char *p = xstrdup(path), *s;
	struct stat st;
	int rc = 0;

	for (s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) != 0 && errno != EEXIST)
			rc = -1;
		*s = '/';
	}
	if (rc == 0 && (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)))
		rc = -1;
	free(p);
	return rc;
}

/*
 * What is at path: 0 nothing (or a stale socket, now removed), or -1 with
 * cause (a live daemon, or something that is not a socket).
 */
static int
server_probe(const char *path, char **cause)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) != 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		xasprintf(cause, "%s exists and is not a socket", path);
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1) {
		xasprintf(cause, "socket: %s", strerror(errno));
		return -1;
	}
	rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	close(fd);
	if (rc == 0) {
		xasprintf(cause, "another mistrald is already listening on "
		    "%s", path);
		return -1;
	}
	if (errno != ECONNREFUSED) {
		xasprintf(cause, "%s: %s", path, strerror(errno));
		return -1;
	}
	log_info("removing stale socket %s (left by a daemon that did not "
	    "exit cleanly)", path);
	if (unlink(path) != 0 && errno != ENOENT) {
		xasprintf(cause, "unlink %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Check that a socket path is usable before the model is loaded. */
int
server_check_path(const char *path, char **cause)
{
	struct sockaddr_un sa;

	if (strlen(path) >= sizeof sa.sun_path) {
		xasprintf(cause, "socket path %s is %zu bytes long; the "
		    "limit is %zu", path, strlen(path), sizeof sa.sun_path - 1);
		return -1;
	}
	if (path[0] != '/') {
		xasprintf(cause, "socket path %s is not absolute", path);
		return -1;
	}
	return server_probe(path, cause);
}

/*
 * Each connection is a descriptor: raise the soft RLIMIT_NOFILE (often
 * 1024) towards the hard one so that max-connections can be reached, and
 * say so when it cannot.
 */
static void
server_nofile(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)cfg.max_connections + SERVER_REFUSED_MAX + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ?
	    want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		log_warnx("server_nofile: only %llu descriptors allowed; "
		    "fewer than max-connections (%u) connections will be "
		    "accepted", (unsigned long long)rl.rlim_cur,
		    cfg.max_connections);
}

/*
 * Start listening: the socket systemd passed, or cfg.socket.  Returns 0,
 * or -1 with a message in cause.
 */
int
server_listen(uv_loop_t *l, char **cause)
{
	char *dir, *slash;
	struct group *gr = NULL;
	mode_t old;
	int fd, rc;

	uv_pipe_init(l, &server_pipe, 0);
	fd = sd_listen_fd(cause);
	if (fd == -2)
		return -1;
	if (fd >= 0) {
		if ((rc = uv_pipe_open(&server_pipe, fd)) != 0) {
			xasprintf(cause, "uv_pipe_open(%d): %s", fd,
			    uv_strerror(rc));
			return -1;
		}
		server_activated = 1;
		log_info("listening on the socket passed by systemd");
	} else {
		if (server_check_path(cfg.socket, cause) != 0)
			return -1;
		if (cfg.socket_group != NULL && *cfg.socket_group != '\0' &&
		    (gr = getgrnam(cfg.socket_group)) == NULL) {
			xasprintf(cause, "socket-group %s: no such group",
			    cfg.socket_group);
			return -1;
		}
		dir = xstrdup(cfg.socket);
		slash = strrchr(dir, '/');
		if (slash != dir) {
			*slash = '\0';
			if (server_mkdirs(dir, 0755) != 0) {
				xasprintf(cause, "mkdir %s: %s", dir,
				    strerror(errno));
				free(dir);
				return -1;
			}
		}
		free(dir);
		old = umask(0117);
		rc = uv_pipe_bind(&server_pipe, cfg.socket);
		umask(old);
		if (rc != 0) {
			xasprintf(cause, "bind %s: %s", cfg.socket,
			    uv_strerror(rc));
			return -1;
		}
		if (chmod(cfg.socket, 0660) != 0) {
			xasprintf(cause, "chmod %s: %s", cfg.socket,
			    strerror(errno));
			return -1;
		}
		if (gr != NULL && chown(cfg.socket, (uid_t)-1, gr->gr_gid) != 0) {
			xasprintf(cause, "chown %s to group %s: %s", cfg.socket,
			    cfg.socket_group, strerror(errno));
			return -1;
		}
		log_info("listening on %s", cfg.socket);
	}
	server_nofile();
	if ((rc = uv_listen((uv_stream_t *)&server_pipe, SOMAXCONN,
	    server_connection_cb)) != 0) {
		xasprintf(cause, "listen: %s", uv_strerror(rc));
		return -1;
	}
	server_open = 1;
	uv_timer_init(l, &server_timer);
	uv_timer_start(&server_timer, server_timer_cb, 1000, 1000);
	return 0;
}

/* Stop accepting.  libuv unlinks a socket it bound itself when closing. */
void
server_close(void)
{
	if (!server_open)
		return;
	server_open = 0;
	uv_close((uv_handle_t *)&server_pipe, NULL);
	uv_close((uv_handle_t *)&server_timer, NULL);
}

/* Close every connection (at the end of a shutdown). */
void
server_close_clients(void)
{
	struct client *c, *tmp;

	TAILQ_FOREACH_SAFE(c, &server_clients, entry, tmp)
		server_client_close(c);
}
