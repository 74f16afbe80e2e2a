/* Stand-in for libnvinfer.so.N: the symbols TensorRT's Python bindings (8.6, 10.x, 11.x)
 * resolve when they are loaded, so that the real bindings import on a machine without
 * TensorRT's libraries or a GPU. Nothing works: every factory returns NULL, which the
 * bindings report as `TypeError: pybind11::init(): factory function returned nullptr`,
 * exactly as when a real TensorRT cannot start (no GPU, driver mismatch).
 *
 * When SSD_EDGE_TRT_STANDIN_ERROR is set, the Runtime, Builder and Refitter factories first
 * log its text as an ERROR through the ILogger they were given, as TensorRT logs why it
 * could not start. The logger is a C++ object; its `log(Severity, char const*)` is virtual
 * function 0 up to TensorRT 10.x and 4 in 11.x (ILogger gained versioned-interface methods
 * before it). `version` is NV_TENSORRT_VERSION, which the bindings pass: major*1000 +
 * minor*100 + patch up to 8.x, major*10000 + minor*100 + patch from 10.0.
 */
#include <stdlib.h>

typedef void (*log_function)(void *logger, int severity, const char *message);

enum { SEVERITY_ERROR = 1 };

static void *fail_after_logging(void *logger, int version)
{
    const char *message = getenv("SSD_EDGE_TRT_STANDIN_ERROR");
    if (logger != NULL && message != NULL) {
        log_function *table = *(log_function **)logger;
        table[version >= 110000 ? 4 : 0](logger, SEVERITY_ERROR, message);
    }
    return NULL;
}

void *createInferRuntime_INTERNAL(void *logger, int version) { return fail_after_logging(logger, version); }
void *createInferBuilder_INTERNAL(void *logger, int version) { return fail_after_logging(logger, version); }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version)
{
    (void)engine;
    return fail_after_logging(logger, version);
}
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { (void)capability; return NULL; }
