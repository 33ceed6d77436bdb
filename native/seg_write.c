/* native/seg_write.c: helper section seg-write (see mqstore_native.h, section "seg-write"). */
#include "mqstore_internal.h"
