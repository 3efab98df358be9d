#include "em-internal.h"

#define EM_STR_(x) #x
#define EM_STR(x) EM_STR_(x)

const char *em_version(void)
{
    return EM_STR(EM_VERSION_MAJOR) "." EM_STR(EM_VERSION_MINOR) "." EM_STR(EM_VERSION_PATCH);
}
