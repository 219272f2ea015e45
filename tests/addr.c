/*
 * addr.c - ub_addr_parse / ub_addr_format / ub_sock_name.
 *
 * Round trips: every accepted form parses to the expected sockaddr, formats
 * to a string that parses back to the same sockaddr, and IP forms format to
 * exactly their canonical text.  Malformed input gives -EINVAL and no name
 * resolution ever happens ("example.com:80" is malformed).
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void parse_ok(const char *s, struct sockaddr_storage *ss,
		     socklen_t *len)
{
	int r;

	memset(ss, 0xa5, sizeof(*ss));
	*len = 0;
	r = ub_addr_parse(s, ss, len);
	if (r != 0)
		TH_FAILF("ub_addr_parse(\"%s\") = %d (%s), expected 0", s, r,
			 strerror(-r));
}

/* format(parse(s)) parses back to the same address; returns the text. */
static void round_trip(const char *s, const struct sockaddr_storage *ss,
		       socklen_t len, char *out, size_t outlen)
{
	struct sockaddr_storage ss2;
	socklen_t len2;
	int r = ub_addr_format((const struct sockaddr *)ss, len, out, outlen);

	if (r < 0)
		TH_FAILF("ub_addr_format(%s) = %d (%s)", s, r, strerror(-r));
	CHECK_EQ(r, strlen(out));
	parse_ok(out, &ss2, &len2);
	CHECK_EQ(len2, len);
	CHECK(memcmp(ss, &ss2, len) == 0);
	printf("  \"%s\" -> \"%s\" -> same address\n", s, out);
}

static void bad(const char *s)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	int r = ub_addr_parse(s, &ss, &len);

	if (r != -EINVAL)
		TH_FAILF("ub_addr_parse(\"%s\") = %d, expected -EINVAL", s, r);
}

static void check_inet(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	char out[128];

	printf("IPv4 127.0.0.1:80\n");
	parse_ok("127.0.0.1:80", &ss, &len);
	CHECK_EQ(len, sizeof(struct sockaddr_in));
	CHECK_EQ(in->sin_family, AF_INET);
	CHECK_EQ(ntohs(in->sin_port), 80);
	CHECK_EQ(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
	round_trip("127.0.0.1:80", &ss, len, out, sizeof(out));
	CHECK(strcmp(out, "127.0.0.1:80") == 0);

	printf("IPv4 edge ports 0 and 65535\n");
	parse_ok("0.0.0.0:0", &ss, &len);
	CHECK_EQ(in->sin_family, AF_INET);
	CHECK_EQ(ntohs(in->sin_port), 0);
	CHECK_EQ(in->sin_addr.s_addr, 0);
	round_trip("0.0.0.0:0", &ss, len, out, sizeof(out));
	CHECK(strcmp(out, "0.0.0.0:0") == 0);
	parse_ok("10.1.2.3:65535", &ss, &len);
	CHECK_EQ(ntohs(in->sin_port), 65535);
	round_trip("10.1.2.3:65535", &ss, len, out, sizeof(out));
	CHECK(strcmp(out, "10.1.2.3:65535") == 0);

	printf("IPv6 [::1]:8080\n");
	parse_ok("[::1]:8080", &ss, &len);
	CHECK_EQ(len, sizeof(struct sockaddr_in6));
	CHECK_EQ(in6->sin6_family, AF_INET6);
	CHECK_EQ(ntohs(in6->sin6_port), 8080);
	CHECK(memcmp(&in6->sin6_addr, &in6addr_loopback, 16) == 0);
	round_trip("[::1]:8080", &ss, len, out, sizeof(out));
	CHECK(strcmp(out, "[::1]:8080") == 0);

	parse_ok("[2001:db8::42]:443", &ss, &len);
	CHECK_EQ(in6->sin6_family, AF_INET6);
	CHECK_EQ(ntohs(in6->sin6_port), 443);
	round_trip("[2001:db8::42]:443", &ss, len, out, sizeof(out));
	CHECK(strcmp(out, "[2001:db8::42]:443") == 0);
}

static void check_unix(const char *s, const char *path)
{
	struct sockaddr_storage ss;
	struct sockaddr_un *un = (struct sockaddr_un *)&ss;
	socklen_t len;
	char out[256];

	printf("unix %s\n", s);
	parse_ok(s, &ss, &len);
	CHECK_EQ(un->sun_family, AF_UNIX);
	CHECK(strcmp(un->sun_path, path) == 0);
	/* at least the family and the path with its NUL */
	CHECK_CMP(len, >=, offsetof(struct sockaddr_un, sun_path) +
				   strlen(path));
	CHECK_CMP(len, <=, sizeof(struct sockaddr_un));
	round_trip(s, &ss, len, out, sizeof(out));
	CHECK(strcmp(out, s) == 0 ||
	      (strncmp(out, "unix:", 5) == 0 && strcmp(out + 5, path) == 0) ||
	      strcmp(out, path) == 0);
}

/* Linux's abstract namespace, "unix:@name": parsed, formatted back the
 * same, and usable: a socket bound to it reports that name, and a connect
 * to the parsed address reaches it. */
static void check_abstract(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_un *un = (struct sockaddr_un *)&ss;
	socklen_t len;
	char s[160], name[64], out[160];
	int l, c, a;

	snprintf(name, sizeof(name), "uringbuf-addr-test-%d", (int)getpid());
	snprintf(s, sizeof(s), "unix:@%s", name);
	printf("unix %s\n", s);
	parse_ok(s, &ss, &len);
	CHECK_EQ(un->sun_family, AF_UNIX);
	CHECK_EQ(un->sun_path[0], 0);
	CHECK(memcmp(un->sun_path + 1, name, strlen(name)) == 0);
	CHECK_EQ(len, offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	round_trip(s, &ss, len, out, sizeof(out));
	CHECK(strcmp(out, s) == 0);
	bad("unix:@"); /* no name */

	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(l >= 0);
	CHECK(bind(l, (struct sockaddr *)&ss, len) == 0);
	CHECK(listen(l, 1) == 0);
	CHECK_OK(ub_sock_name(l, 0, out, sizeof(out)));
	CHECK(strcmp(out, s) == 0);
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(c >= 0);
	CHECK(connect(c, (struct sockaddr *)&ss, len) == 0);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	CHECK(a >= 0);
	CHECK_OK(ub_sock_name(c, 1, out, sizeof(out)));
	CHECK(strcmp(out, s) == 0);
	/* the connecting side is unnamed: "unix:", which does not parse */
	CHECK_OK(ub_sock_name(c, 0, out, sizeof(out)));
	CHECK(strcmp(out, "unix:") == 0);
	close(a);
	close(c);
	close(l);
}

static void check_malformed(void)
{
	char longpath[300];

	printf("malformed inputs give -EINVAL\n");
	bad("127.0.0.1");          /* missing port */
	bad("127.0.0.1:");         /* empty port */
	bad("127.0.0.1:70000");    /* port out of range */
	bad("127.0.0.1:65536");
	bad("127.0.0.1:-1");
	bad("127.0.0.1:80x");
	bad("127.0.0.1:8 0");
	bad("127.0.0.1: 80");
	bad("127.0.0.256:80");
	bad("127.0.0:80x");
	bad(":80");
	bad("garbage");
	bad("");
	bad("example.com:80");     /* no name resolution */
	bad("ip6-localhost:80");
	bad("[::1]");              /* missing port */
	bad("[::1]:");
	bad("[::1:80");            /* unclosed bracket */
	bad("[::1]:99999");
	bad("[zz::1]:80");
	bad("[127.0.0.1]:80");
	bad("unix:");              /* empty path */
	memset(longpath, 'a', sizeof(longpath));
	memcpy(longpath, "unix:/", 6);
	longpath[sizeof(longpath) - 1] = 0; /* longer than sun_path */
	bad(longpath);
}

static void check_format_errors(void)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char out[64];
	int r;

	printf("format: short output -ENOSPC, bad family or length -EINVAL\n");
	parse_ok("127.0.0.1:80", &ss, &len);
	CHECK_ERR(ub_addr_format((struct sockaddr *)&ss, len, out, 5), ENOSPC);
	/* exactly the length: no room for the NUL */
	CHECK_ERR(ub_addr_format((struct sockaddr *)&ss, len, out, 12), ENOSPC);
	r = ub_addr_format((struct sockaddr *)&ss, len, out, 13);
	CHECK_EQ(r, 12);
	CHECK(strcmp(out, "127.0.0.1:80") == 0);
	CHECK_ERR(ub_addr_format((struct sockaddr *)&ss, 4, out, sizeof(out)),
		  EINVAL);
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_PACKET;
	CHECK_ERR(ub_addr_format((struct sockaddr *)&ss, sizeof(ss), out,
				 sizeof(out)),
		  EINVAL);
}

static void check_sock_name(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	socklen_t len = sizeof(ss);
	char name[128], peer[128], want[128];
	int fds[2];

	printf("ub_sock_name on a TCP loopback pair\n");
	th_tcp_pair(fds, 0);
	CHECK(getsockname(fds[0], (struct sockaddr *)&ss, &len) == 0);
	snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(in->sin_port));
	CHECK_EQ(ub_sock_name(fds[0], 0, name, sizeof(name)), strlen(want));
	CHECK(strcmp(name, want) == 0);
	CHECK_EQ(ub_sock_name(fds[1], 1, peer, sizeof(peer)), strlen(want));
	CHECK(strcmp(peer, want) == 0);
	len = sizeof(ss);
	CHECK(getsockname(fds[1], (struct sockaddr *)&ss, &len) == 0);
	snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(in->sin_port));
	CHECK_OK(ub_sock_name(fds[0], 1, peer, sizeof(peer)));
	CHECK(strcmp(peer, want) == 0);
	close(fds[0]);
	close(fds[1]);
	CHECK(ub_sock_name(fds[0], 0, name, sizeof(name)) < 0);
}

int main(void)
{
	th_init("addr");
	check_inet();
	check_unix("unix:/tmp/x", "/tmp/x");
	check_unix("/tmp/y", "/tmp/y");
	check_abstract();
	check_malformed();
	check_format_errors();
	check_sock_name();
	return th_finish();
}
