/*
 * addr.c - socket addresses to and from text.
 *
 * Owns nothing; pure functions.  Forms: "1.2.3.4:80", "[::1]:80",
 * "unix:/path", "/path" and "unix:@name" (abstract).  No name resolution:
 * a library call that may block for seconds on DNS does not belong on an
 * event loop thread.
 */
#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static int parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

bool ub__addr_ok(const struct sockaddr *sa, socklen_t len)
{
	return sa && len >= sizeof(sa_family_t) &&
	       len <= sizeof(struct sockaddr_storage) &&
	       (sa->sa_family == AF_INET || sa->sa_family == AF_INET6 ||
		sa->sa_family == AF_UNIX);
}

int ub_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon;
	uint16_t port;
	size_t hl;

	if (!s || !ss || !len)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (!strncmp(s, "unix:", 5) || s[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		const char *path = s[0] == '/' ? s : s + 5;
		size_t pl = strlen(path);

		if (pl == 0 || pl >= sizeof(un->sun_path))
			return -EINVAL;
		un->sun_family = AF_UNIX;
		if (path[0] == '@') {
			/* Linux's abstract namespace: a NUL, then the name;
			 * the length says where the name ends (no NUL). */
			if (pl == 1)
				return -EINVAL;
			memcpy(un->sun_path + 1, path + 1, pl - 1);
			*len = (socklen_t)(offsetof(struct sockaddr_un,
						    sun_path) + pl);
			return 0;
		}
		memcpy(un->sun_path, path, pl + 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl + 1);
		return 0;
	}
	if (s[0] == '[') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		hl = (size_t)(close - s - 1);
		if (hl == 0 || hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		if (parse_port(close + 2, &port) < 0 ||
		    inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return -EINVAL;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
		return 0;
	}
	colon = strrchr(s, ':');
	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (parse_port(colon + 1, &port) < 0)
		return -EINVAL;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	{
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return -EINVAL;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		*len = sizeof(*in);
	}
	return 0;
}

int ub_addr_format(const struct sockaddr *sa, socklen_t len, char *out,
		   size_t outlen)
{
	char host[INET6_ADDRSTRLEN];
	int n;

	if (!sa || !out || len < sizeof(sa_family_t))
		return -EINVAL;
	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const void *)sa;

		if (len < sizeof(*in))
			return -EINVAL;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		n = snprintf(out, outlen, "%s:%u", host, ntohs(in->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		if (len < sizeof(*in6))
			return -EINVAL;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		n = snprintf(out, outlen, "[%s]:%u", host,
			     ntohs(in6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *un = (const void *)sa;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		size_t pl;

		if (len > off + 1 && un->sun_path[0] == '\0') {
			/* abstract: "unix:@name", as ub_addr_parse() reads
			 * it (a name with a NUL in it ends there) */
			pl = strnlen(un->sun_path + 1, len - off - 1);
			n = snprintf(out, outlen, "unix:@%.*s", (int)pl,
				     un->sun_path + 1);
			break;
		}
		/* a path, or "unix:" for an unnamed socket (a socketpair) */
		pl = len > off ? strnlen(un->sun_path, len - off) : 0;
		n = snprintf(out, outlen, "unix:%.*s", (int)pl, un->sun_path);
		break;
	}
	default:
		return -EINVAL;
	}
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= outlen)
		return -ENOSPC;
	return n;
}

int ub_sock_name(int fd, int peer, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int ret;

	memset(&ss, 0, sizeof(ss));
	ret = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
		   : getsockname(fd, (struct sockaddr *)&ss, &len);
	if (ret < 0)
		return -errno;
	return ub_addr_format((struct sockaddr *)&ss, len, out, outlen);
}
