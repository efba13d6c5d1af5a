/* Element-wise, cross-entropy and 4-bit dequantization kernels (kernels.c). */
#ifndef LORA_STUDIO_KERNELS_H
#define LORA_STUDIO_KERNELS_H

#include <node_api.h>

/* Adds the kernels' functions to the module's exports. */
void register_kernels(napi_env env, napi_value exports);

#endif
