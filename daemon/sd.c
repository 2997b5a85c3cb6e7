/*
 * sd.c: systemd's readiness (sd_notify) and socket-activation (LISTEN_FDS)
 * protocols, written out by hand rather than linking libsystemd (whose
 * dependencies the daemon does not otherwise need): both are small, stable
 * and documented (sd_notify(3), sd_listen_fds(3)).
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"

/*
 * Send one "KEY=VALUE\n..." datagram to $NOTIFY_SOCKET, if set.  A path
 * starting with '@' is in the abstract namespace; the address length must
 * then cover exactly the name (PLATFORM.md 1d), not the whole sun_path.
 * Failures are logged at debug level only: readiness is best effort.
 */
void
sd_notifyf(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	char msg[512];
	size_t len;
	va_list ap;
	int fd;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof sa.sun_path) {
		log_warnx("sd_notifyf: NOTIFY_SOCKET too long");
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_warn("sd_notifyf: socket");
		return;
	}
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) == -1)
		log_debug("sd_notifyf: sendto %s: %s", path, strerror(errno));
	close(fd);
}

/*
 * The listening socket systemd passed us, if any: fd 3 when LISTEN_PID is
 * our pid and LISTEN_FDS is 1.  The variables are unset so children do not
 * inherit them.  Returns the fd, -1 when not socket-activated, or -2 with
 * a message in cause when what was passed is unusable.
 */
int
sd_listen_fd(char **cause)
{
	const char *pid_s = getenv("LISTEN_PID");
	const char *fds_s = getenv("LISTEN_FDS");
	int type = 0, listening = 0, domain = 0;
	socklen_t len;
	char *end;
	long pid, n;

	if (pid_s == NULL || fds_s == NULL)
		return -1;
	pid = strtol(pid_s, &end, 10);
	if (*end != '\0' || pid != (long)getpid())
		return -1;
	n = strtol(fds_s, &end, 10);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (*end != '\0' || n < 1) {
		xasprintf(cause, "LISTEN_FDS=%s: no socket passed", fds_s);
		return -2;
	}
	if (n > 1) {
		xasprintf(cause, "LISTEN_FDS=%ld: expected one socket", n);
		return -2;
	}
	len = sizeof domain;
	if (getsockopt(3, SOL_SOCKET, SO_DOMAIN, &domain, &len) == -1) {
		xasprintf(cause, "fd 3 from systemd: %s", strerror(errno));
		return -2;
	}
	len = sizeof type;
	getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len);
	len = sizeof listening;
	getsockopt(3, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
	if (domain != AF_UNIX || type != SOCK_STREAM || !listening) {
		xasprintf(cause, "fd 3 from systemd is not a listening Unix "
		    "stream socket (ListenStream= with a path is needed)");
		return -2;
	}
	return 3;
}
