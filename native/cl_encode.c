/* cl_encode.c: see the matching section of mqstore_native.h. */
#include "mqstore_internal.h"
