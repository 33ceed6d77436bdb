/* native/cl_recover.c: helper section cl-recovery (see mqstore_native.h, section "cl-recovery"). */
#include "mqstore_internal.h"
