// tasks/sum.c: the sum of the bytes of the task's first input.
#include "see_task.h"

static uint8_t buf[4096];

SEE_RUN {
    int64_t id = see_input(0);
    if (id < 0 || see_claim(id) < 0) return 1;   /* non-zero: the task failed */
    int32_t n = see_read(id, 0, buf, sizeof buf);
    if (n < 0) return 2;
    uint64_t sum = 0;
    for (int32_t i = 0; i < n; i++) sum += buf[i];
    see_result((int64_t)sum);
    return 0;
}
