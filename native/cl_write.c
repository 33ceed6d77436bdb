/* native/cl_write.c: helper section cl-write (see mqstore_native.h, section "cl-write"). */
#include "mqstore_internal.h"
