#include "em-internal.h"

#include <limits.h>
#include <string.h>

const char *em_strerror(int err)
{
    if (err == INT_MIN)
        return "Unknown error";
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "Success";
    case EM_ERESOLVE:
        return "Host name did not resolve";
    case EM_ETLS:
        return "TLS handshake or verification failed";
    case EM_ETLS_TRUNCATED:
        return "TLS peer closed without close_notify";
    case EM_EBACKEND:
        return "No such backend (known: " EM__BACKEND_NAMES ")";
    }
    const char *s = strerrordesc_np(err);
    return s ? s : "Unknown error";
}
