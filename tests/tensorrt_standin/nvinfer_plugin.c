/* Stand-in for libnvinfer_plugin.so.N (see nvinfer.c): no plugins are registered. */
#include <stdbool.h>

bool initLibNvInferPlugins(void *logger, const char *name_space)
{
    (void)logger; (void)name_space;
    return false;
}
