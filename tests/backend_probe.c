/* Whether this machine runs a backend: exit 0 and its name when a reactor
 * on it can be made, else exit 1 and why (an io_uring the kernel refuses,
 * a backend this build lacks). scripts/run-tests.sh asks it before running
 * the suite on a backend, and reports a refused one as skipped. */
#include <em.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: backend_probe NAME\n");
        return 2;
    }
    em_reactor *r = em_reactor_new(&(em_reactor_opts){.backend = argv[1]});
    if (!r) {
        printf("%s: %s\n", argv[1], em_strerror(errno));
        return 1;
    }
    printf("%s\n", em_backend_name(r));
    em_reactor_free(r);
    return 0;
}
