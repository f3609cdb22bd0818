#include "trace/trace-hw_vmmbypass_ib.h"
