/* examples/tls_echo_server and examples/tls_client as a user runs them,
 * with the test certificates (tests/tls/make-certs.sh): the client trusts
 * the server's certificate through CAFILE, checks it names 127.0.0.1, says
 * what was agreed, gets its line echoed and exits 0; a server it cannot
 * trust (no CAFILE: the system store; another CA; a self-signed, expired or
 * other host's certificate) is refused with the reason on stderr and exit
 * status 1, and the server goes on. The client also works against openssl
 * s_server. */
#include "example_prog.h"
#include "tls_fixture.h"

TLS_FIXTURE();

static int server_err = -1; /* the read end of the server's stderr */

static example_prog start_server(const char *cert)
{
    char *argv[] = {"tls_echo_server", (char *)tls_file(cert), (char *)tls_file("server.key"), "0",
                    NULL};
    int e[2];
    ASSERT_EQ(pipe2(e, O_CLOEXEC), 0);
    int saved = dup(STDERR_FILENO); /* the server inherits the pipe as its stderr */
    ASSERT_GE(saved, 0);
    dup2(e[1], STDERR_FILENO);
    example_prog p = example_start("tls_echo_server", argv, false);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(e[1]);
    server_err = e[0];
    return p;
}

/* The server's account of a refused handshake (a line on its stderr). */
static void expect_server_says(const char *reason)
{
    example_prog err = {.pid = -1, .in = -1, .out = server_err};
    char line[512];
    if (!example_read_line(&err, line, sizeof line, 5000))
        FAIL("tls_echo_server said nothing on stderr: '%s'", line);
    if (strncmp(line, "connection closed: ", 19) != 0 || !strstr(line, reason))
        FAIL("expected '%s' from tls_echo_server, got '%s'", reason, line);
}

/* Stops it, after checking it said nothing more than was expected. */
static void stop_server(example_prog *p)
{
    struct pollfd pfd = {.fd = server_err, .events = POLLIN};
    ASSERT_EQ(poll(&pfd, 1, 100), 0);
    example_stop(p);
    close(server_err);
    server_err = -1;
}

typedef struct run {
    int status; /* exit status */
    char out[1024], err[1024];
} run;

/* tls_client 127.0.0.1 PORT [CAFILE] to its end. */
static run client(int port, const char *ca)
{
    char port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    char *argv[] = {"tls_client", "127.0.0.1", port_arg, ca ? (char *)tls_file(ca) : NULL, NULL};
    run r;
    int status = example_run("tls_client", argv, 15, r.out, sizeof r.out, r.err, sizeof r.err);
    if (!WIFEXITED(status))
        FAIL("tls_client ended by signal %d; stderr '%s'", WTERMSIG(status), r.err);
    r.status = WEXITSTATUS(status);
    return r;
}

/* It verified the server, named the protocol and cipher, printed the
 * reply (want) and exited 0, with nothing on stderr. */
static void expect_verified(const run *r, const char *want)
{
    if (r->status != 0)
        FAIL("tls_client exit status %d; stderr '%s'", r->status, r->err);
    char protocol[32], cipher[128], tail[256];
    int bits = 0;
    if (sscanf(r->out, "verified; %31[^,], %127s (%d bits)\n%255[^\n]", protocol, cipher, &bits,
               tail) != 4)
        FAIL("tls_client printed '%s'", r->out);
    ASSERT(strcmp(protocol, "TLSv1.3") == 0 || strcmp(protocol, "TLSv1.2") == 0);
    ASSERT_GE(bits, 128);
    ASSERT(strstr(r->out, want) != NULL);
    ASSERT_STREQ(r->err, "");
}

/* Refused before any data: status 1, nothing on stdout, reason on stderr. */
static void expect_refused(const run *r, const char *reason)
{
    if (r->status != 1)
        FAIL("tls_client exit status %d, stdout '%s'", r->status, r->out);
    ASSERT_STREQ(r->out, "");
    if (strncmp(r->err, "tls_client: ", 12) != 0 || !strstr(r->err, reason))
        FAIL("expected '%s' on stderr, got '%s'", reason, r->err);
}

TEST(a_client_trusting_the_ca_gets_its_line_back)
{
    example_prog p = start_server("server.pem");
    for (int i = 0; i < 3; i++) { /* one after another: the server goes on */
        run r = client(p.port, "ca.pem");
        expect_verified(&r, "\nhello\n");
    }
    stop_server(&p);
}

/* A certificate that names only the address is enough: the client checks
 * the address it connected to. */
TEST(a_certificate_for_the_address_alone_is_accepted)
{
    example_prog p = start_server("ip.pem");
    run r = client(p.port, "ca.pem");
    expect_verified(&r, "\nhello\n");
    stop_server(&p);
}

TEST(a_server_outside_the_trust_settings_is_refused)
{
    example_prog p = start_server("server.pem");
    run r = client(p.port, NULL); /* the system's store knows no test CA */
    expect_refused(&r, "certificate verify failed");
    expect_server_says("alert unknown ca");
    r = client(p.port, "other-ca.pem");
    expect_refused(&r, "certificate verify failed");
    expect_server_says("alert unknown ca");
    r = client(p.port, "ca.pem"); /* and the server still serves */
    expect_verified(&r, "\nhello\n");
    stop_server(&p);
}

/* Each certificate with what OpenSSL says of it. */
TEST(a_wrong_name_or_an_untrusted_certificate_is_refused)
{
    static const struct {
        const char *cert, *reason;
    } bad[] = {
        {"wronghost.pem", "IP address mismatch"},
        {"untrusted.pem", "unable to get local issuer certificate"},
        {"selfsigned.pem", "self-signed certificate"},
        {"expired.pem", "certificate has expired"},
        {"future.pem", "certificate is not yet valid"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        example_prog p = start_server(bad[i].cert);
        run r = client(p.port, "ca.pem");
        expect_refused(&r, bad[i].reason);
        expect_server_says("alert");
        stop_server(&p);
    }
}
TEST_TIMEOUT(a_wrong_name_or_an_untrusted_certificate_is_refused, 60);

TEST(a_refused_port_is_status_1)
{
    run r = client(free_port(), "ca.pem");
    expect_refused(&r, em_strerror(ECONNREFUSED));
}

/* openssl s_server -rev answers each line reversed: the client verifies a
 * server that is not libem the same way. */
TEST(the_client_against_openssl_s_server)
{
    int port = free_port();
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    int in[2], out[2];
    ASSERT_EQ(pipe2(in, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], STDIN_FILENO); /* kept open: s_server stops at its end */
        dup2(out[1], STDOUT_FILENO);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDERR_FILENO); /* its account of each connection */
        execlp("openssl", "openssl", "s_server", "-accept", addr, "-cert", tls_file("server.pem"),
               "-key", tls_file("server.key"), "-rev", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    example_prog s = {.pid = pid, .port = port, .in = in[1], .out = out[0]};
    char line[256];
    do
        if (!example_read_line(&s, line, sizeof line, 5000))
            FAIL("openssl s_server did not start: '%s'", line);
    while (strcmp(line, "ACCEPT") != 0);
    run r = client(port, "ca.pem");
    expect_verified(&r, "\nolleh\n");
    r = client(port, "other-ca.pem");
    expect_refused(&r, "certificate verify failed");
    example_stop(&s);
}
