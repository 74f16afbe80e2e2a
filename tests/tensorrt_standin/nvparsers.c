/* Stand-in for libnvparsers.so.8 (TensorRT 8.x only; see nvinfer.c): the UFF and Caffe
 * parsers, C++ functions under their mangled names (valid C identifiers), none usable. */
#include <stddef.h>

void *_ZN11nvuffparser15createUffParserEv(void) { return NULL; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void) {}
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return NULL; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) {}
