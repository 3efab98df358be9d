/* A program outside the tree, built against an installed libem by
 * tests/consumer.sh: the header and the library must agree on the version,
 * and a reactor must run a timer to the end. */
#include <em.h>
#include <stdio.h>
#include <string.h>

static void tick(em_reactor *r, void *arg)
{
    ++*(int *)arg;
    em_stop(r);
}

int main(void)
{
    char header[32];
    snprintf(header, sizeof header, "%d.%d.%d", EM_VERSION_MAJOR, EM_VERSION_MINOR,
             EM_VERSION_PATCH);
    if (strcmp(header, em_version()) != 0) {
        fprintf(stderr, "header %s, library %s\n", header, em_version());
        return 1;
    }
    em_reactor *r = em_reactor_new(NULL);
    if (!r) {
        fprintf(stderr, "em_reactor_new: %s\n", em_strerror(errno));
        return 1;
    }
    int ticks = 0;
    if (!em_add_timer(r, 0.01, tick, &ticks) || em_run(r) < 0 || ticks != 1) {
        fprintf(stderr, "timer: %d ticks\n", ticks);
        return 1;
    }
    em_reactor_free(r);
    printf("libem %s: 1 tick\n", em_version());
    return 0;
}
